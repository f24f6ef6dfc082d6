"""The admin console (issue 16): who may log in (accounts.py); its web pages come later. It sits above the
stages and the store and below app and cli, which start it."""
