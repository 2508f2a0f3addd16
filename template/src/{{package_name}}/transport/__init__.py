"""Server wiring of each transport; the chosen one is started by ``__main__``."""
