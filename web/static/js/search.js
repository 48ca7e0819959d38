/* Event search: the search box's title suggestions as one types (every page's header and the
   search page), and on the search page the results of GET /events/search, the page's address
   holding the search (shareable, and the browser's back button steps through searches). */
"use strict";

(function () {
  const SUGGEST_AFTER_MS = 150; // a pause in typing, not every keystroke
  const FILTERS = ["category", "from", "to", "min_price", "max_price", "sort"];

  /* --- suggestions ------------------------------------------------------------------------ */

  function enhanceBox(form, onSearch) {
    const input = form.querySelector('input[role="combobox"]');
    const list = form.querySelector('[role="listbox"]');
    let timer = null;
    let asked = 0;
    let active = -1;

    function options() {
      return Array.from(list.querySelectorAll('[role="option"]'));
    }

    function close() {
      asked += 1; // an answer still on its way is not shown
      list.hidden = true;
      list.replaceChildren();
      input.setAttribute("aria-expanded", "false");
      input.removeAttribute("aria-activedescendant");
      active = -1;
    }

    function choose(title) {
      input.value = title;
      close();
      if (onSearch) onSearch();
      else form.submit();
    }

    function point(index) {
      const all = options();
      if (!all.length) return;
      active = (index + all.length) % all.length;
      all.forEach(function (option, at) {
        option.setAttribute("aria-selected", at === active ? "true" : "false");
      });
      input.setAttribute("aria-activedescendant", all[active].id);
    }

    function show(suggestions) {
      // A later answer (the buyer kept typing) keeps the suggestion the arrows are on, if any.
      const kept = active >= 0 ? options()[active].textContent : null;
      list.replaceChildren();
      suggestions.forEach(function (suggestion, at) {
        const option = document.createElement("li");
        option.id = input.id + "-option-" + at;
        option.setAttribute("role", "option");
        option.setAttribute("aria-selected", "false");
        option.textContent = suggestion.title;
        // mousedown, not click: the input keeps its focus, so the list is still there
        option.addEventListener("mousedown", function (event) {
          event.preventDefault();
          choose(suggestion.title);
        });
        list.append(option);
      });
      const any = suggestions.length > 0;
      list.hidden = !any;
      input.setAttribute("aria-expanded", any ? "true" : "false");
      active = -1;
      input.removeAttribute("aria-activedescendant");
      const again = suggestions.findIndex(function (s) { return s.title === kept; });
      if (again >= 0) point(again);
    }

    async function suggest() {
      const text = input.value.trim();
      const mine = ++asked;
      // one Korean, Japanese or Chinese character already narrows; one Latin letter does not
      if (!text || (text.length < 2 && /^[\x00-\x7f]$/.test(text))) {
        close();
        return;
      }
      const answer = await FlashSale.api("GET", "/events/suggest?q=" + encodeURIComponent(text));
      if (mine !== asked || !answer.ok) return;
      show(answer.body.suggestions || []);
    }

    input.addEventListener("input", function () {
      clearTimeout(timer);
      timer = setTimeout(suggest, SUGGEST_AFTER_MS);
    });
    input.addEventListener("keydown", function (event) {
      if (event.key === "ArrowDown" || event.key === "ArrowUp") {
        if (list.hidden) return;
        event.preventDefault();
        point(active + (event.key === "ArrowDown" ? 1 : -1));
      } else if (event.key === "Enter" && active >= 0) {
        event.preventDefault();
        choose(options()[active].textContent);
      } else if (event.key === "Escape") {
        close();
      }
    });
    input.addEventListener("blur", close);
    form.addEventListener("submit", function (event) {
      clearTimeout(timer);
      close();
      if (onSearch) {
        event.preventDefault();
        onSearch();
      }
    });
  }

  /* --- the search page -------------------------------------------------------------------- */

  function searchPage(box, filters) {
    const status = document.getElementById("search-status");
    const results = document.getElementById("search-results");
    const previous = document.getElementById("previous-page");
    const next = document.getElementById("next-page");
    const input = box.querySelector('input[name="q"]');
    let shown = 0;

    function fill(params) {
      input.value = params.get("q") || "";
      for (const name of FILTERS) {
        const element = filters.elements[name];
        if (element) element.value = params.get(name) || (name === "sort" ? "relevance" : "");
      }
    }

    function fromForms(page) {
      const params = new URLSearchParams();
      if (input.value.trim()) params.set("q", input.value.trim());
      for (const name of FILTERS) {
        const value = filters.elements[name].value;
        if (value && !(name === "sort" && value === "relevance")) params.set(name, value);
      }
      if (page > 1) params.set("page", String(page));
      return params;
    }

    function price(hit) {
      if (!hit.price_min) return "";
      const low = FlashSale.money(hit.price_min, hit.currency);
      if (hit.price_max === hit.price_min) return low;
      return low + " – " + FlashSale.money(hit.price_max, hit.currency);
    }

    function card(hit) {
      const item = document.createElement("li");
      item.className = "card hit";
      item.id = "hit-" + hit.id;
      const title = document.createElement("h3");
      const link = document.createElement("a");
      link.href = "/events/" + hit.id + "/seating";
      link.innerHTML = hit.highlight.title; // the API's escaped text, matches in <mark>
      title.append(link);
      const where = document.createElement("p");
      where.className = "where";
      const when = document.createElement("time");
      when.dateTime = hit.starts_at;
      when.textContent = FlashSale.localTime(hit.starts_at);
      where.append(hit.venue + (hit.location ? ", " + hit.location : "") + " · ", when);
      const snippet = document.createElement("p");
      snippet.className = "snippet";
      snippet.innerHTML = hit.highlight.snippet;
      const facts = document.createElement("p");
      facts.className = "facts";
      const cost = document.createElement("span");
      cost.className = "price";
      cost.textContent = price(hit);
      facts.append(cost);
      if (hit.available !== null) {
        const left = document.createElement("span");
        left.className = hit.available > 0 ? "left" : "left sold-out";
        left.textContent = hit.available > 0 ? hit.available + " left" : "Sold out";
        facts.append(left);
      }
      item.append(title, where, snippet, facts);
      return item;
    }

    async function run(params, remember) {
      const query = params.toString();
      if (remember) window.history.pushState(null, "", "/search" + (query ? "?" + query : ""));
      const mine = ++shown;
      FlashSale.say(status, "Searching…", "info");
      const answer = await FlashSale.api("GET", "/events/search?" + query);
      if (mine !== shown) return;
      if (!answer.ok) {
        results.replaceChildren();
        previous.hidden = next.hidden = true;
        const why = answer.status === 0 ? "The search is not answering; try again." : answer.body.message;
        FlashSale.say(status, why || "The search failed.", "error");
        return;
      }
      const page = answer.body;
      results.replaceChildren(...page.hits.map(card));
      const first = (page.page - 1) * page.per_page + 1;
      let text = "No show found.";
      if (page.hits.length) {
        text = "Shows " + first + "–" + (first + page.hits.length - 1);
        if (page.fuzzy) text = "No show has every word: showing titles spelled alike.";
      }
      FlashSale.say(status, text, page.fuzzy ? "info" : "");
      previous.hidden = page.page <= 1;
      next.hidden = !page.has_more;
      previous.onclick = function () { run(fromForms(page.page - 1), true); };
      next.onclick = function () { run(fromForms(page.page + 1), true); };
    }

    function search() {
      run(fromForms(1), true);
    }

    enhanceBox(box, search);
    filters.addEventListener("submit", function (event) {
      event.preventDefault();
      search();
    });
    window.addEventListener("popstate", function () {
      const params = new URLSearchParams(window.location.search);
      fill(params);
      run(params, false);
    });
    const params = new URLSearchParams(window.location.search);
    fill(params);
    run(params, false);
  }

  document.addEventListener("DOMContentLoaded", function () {
    const filters = document.getElementById("search-filters");
    for (const box of document.querySelectorAll("form[data-search-box]")) {
      if (filters && box.classList.contains("big")) searchPage(box, filters);
      else enhanceBox(box, null);
    }
  });
})();
