"""Image datasets: readers with download, checksum verification and a cache; KanjiVG rendering."""
