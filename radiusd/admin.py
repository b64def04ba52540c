"""Admin subcommands (journal, sessions, purge) register themselves here."""
