"""The `triage` command line: one parser whose commands call the service, the trainer and the dev tools."""
