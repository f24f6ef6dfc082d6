"""The CERS student-group target: groups built from a snapshot, a Cognito token, the imports API."""
