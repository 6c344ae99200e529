"""Local fakes of the providers' REST APIs (tests, and `make fakes` for `make run`)."""
