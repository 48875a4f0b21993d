"""The network: a depth, preset or stage list in; a Plan, a Keras backbone and classifier out.

Pure Python up to the Plan (``plan``, ``blocks``, ``architecture``, ``head``, ``presets``,
``summary``, ``keras_writer``); ``backbone``, ``classifier``, ``weights`` and ``saving`` use
Keras, on any backend. Imports no other room.
"""
