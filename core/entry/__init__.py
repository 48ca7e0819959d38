"""Entry tickets: one per unit (per seat) of a confirmed order, shown as a rotating code and
admitted once at the gate. tickets.py issues, voids, lists and transfers them; codes.py makes
and reads their codes; gate.py scans them."""
