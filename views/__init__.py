"""lensframe's built-in views (installed as lensframe.views). One module per view type."""
