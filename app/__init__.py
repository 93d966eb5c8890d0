"""The entry points: the ``audiorec`` command line and the demo. The top layer: it imports
training/, serving/ and the base (audiorec/); nothing imports it."""
