"""The ``skycache`` command line: the only place that prints to the terminal or exits.

Each module here adds the verbs of one area to the app (``register(app)``); the bench and sim portions
add theirs through the ``skycache.cli`` entry-point group, so lib/ never imports them.
"""
