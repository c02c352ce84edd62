// Placeholder until the VerifyDaemon target lands.
