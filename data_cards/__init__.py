"""Dataset release: card, Croissant metadata, plots and a scene browser, built from a curated folder."""
