"""`photodedup review`: a local web app to look at duplicate groups side by side, decide, and apply.

`state` holds the groups and writes decisions to the index, `app` has the routes and pages, `security`
the token, CSRF and header rules, `thumbs` the on-demand thumbnail cache, `command` the CLI entry.
"""
