"""The OneRoster REST API target: vendors pull their scoped roster."""
