// Placeholder until the LoginHelper target lands.
