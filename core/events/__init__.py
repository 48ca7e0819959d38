"""Events with seat maps: the catalogue of events (`catalog`), their seat maps (`seatmap`), their
sale (`sale`) and each web process's copy of what their purchases read (`cache`)."""
