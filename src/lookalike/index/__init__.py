"""Vector indexes behind one interface: exact today; ANN indexes plug in beside it."""
