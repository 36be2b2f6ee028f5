"""The report stage: manifest.json (public contract), report.md, and the atomic publishing of both."""
