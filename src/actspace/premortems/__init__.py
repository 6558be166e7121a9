"""Phase 1, the pre-mortems: cheap experiments whose verdicts the gate reads.

``pm1`` (cross-model similarity) and ``pm2`` (error prediction) read activation stores; ``pm3``
(activation patching) runs the model through the patching core of :mod:`actspace.methods.patching`.
Each ``run_pm*`` takes the keys of its schema section ``premortems.<pm>`` and returns the
``results.json`` record; ``common`` holds what they share, ``report`` the pieces of their
summaries, ``resolve`` the checks of their configuration.
"""
