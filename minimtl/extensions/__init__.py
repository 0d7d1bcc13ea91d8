"""Extensions: each file one capability, attached to the core at a named point (see README.md, "Extensions")."""
