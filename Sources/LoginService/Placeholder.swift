// Placeholder until the LoginService target lands.
