"""Data shipped in the package: the message templates and the campaign specs of the project's top level.

``templates`` and ``campaigns`` here are links to the top-level ``templates/`` and ``campaigns/``
folders of the source tree (the design card puts them there); a wheel holds real copies. Code
reads them with ``importlib.resources`` through ``touchflow.settings.shipped``, never by a path
relative to a source file, so an installed touchflow finds them wherever it is installed.
"""
