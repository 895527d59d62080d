"""lensframe's Panel server (installed as lensframe.server)."""
