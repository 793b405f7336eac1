"""Layer 5: notebook widgets, plots and the headless notebook runner."""
