"""A small synthetic world: fast to generate and to train on."""

#: World sizes for tests that train or generate (seconds, not minutes).
SMALL_WORLD = dict(
    n_entities=16,
    n_cities=6,
    fact_max_count=30,
    frequent_min=3,
    arith_max_count=8,
    max_operand=5,
    corpus_lines=400,
)
