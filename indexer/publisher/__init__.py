"""The publisher application: an advertisement chain that is built, signed and stored
(``chain``, ``store``), publish requests (``ops``) and the node that serves it (``node``).
"""
