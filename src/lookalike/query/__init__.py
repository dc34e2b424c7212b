"""Query kinds beyond the example image: sketch grids, layout sentences, index keys, filters."""
