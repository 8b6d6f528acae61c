"""The HTTP tier: routes, auth, metrics, the activity monitor and the fuzz test."""
