"""Layer 4: notebook widgets, plots and the headless notebook runner."""
