"""The built-in label tables, plain data: one module per label set, each with a ``LABEL_SET`` dict.

:mod:`hrseg.metadata` turns every module of this package into a registered
:class:`~hrseg.metadata.LabelSet` the first time a label set is looked up by name, so a new built-in label set
is one new file here. The tables import nothing (not even :mod:`hrseg.metadata`), which keeps them below
every layer and lets the deployment path (``--classes cityscapes``) read them without the training stack.
A dataset outside hrseg registers its own label set with :func:`hrseg.metadata.register_label_set`.
"""
