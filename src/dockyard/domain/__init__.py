"""Pure domain types and rules: digests, names, references, errors. Imports the stdlib only."""
