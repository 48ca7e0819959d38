"""Events with seat maps: the catalogue of events (`catalog`) and their seat maps (`seatmap`)."""
