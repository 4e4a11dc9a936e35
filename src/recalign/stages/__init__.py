"""The steps a run goes through, each a function over a run folder.

| module            | stage                                                              |
|-------------------|--------------------------------------------------------------------|
| `common.py`       | building a policy, fit + test, loading a run folder back           |
| `pretrain.py`     | stage 1: next-item pretraining (π0)                                |
| `reward_model.py` | the one reward-model trainer (post-training's RM and the judges)    |
| `judge.py`        | the held-out judge ensemble, trained through `reward_model.py`     |
| `posttrain.py`    | stage 2: post-training with one registered method                  |
| `inference.py`    | evaluate and recommend from a finished run                          |

Stages sit above the pure packages (`data`, `models`, `eval`, `posttrain`) and the loop
(`train`), and below `experiments` and `cli`; none of those lower packages imports a stage.
"""
