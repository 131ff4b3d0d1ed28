"""Evaluation: average mAP as the HACS/ActivityNet and EPIC-Kitchens-100 leaderboards compute it
(:mod:`evaluation.detection`), proposal AR@AN and AUC (:mod:`evaluation.proposal`), reports
(:mod:`evaluation.report`), the pipeline's eval stage (:mod:`evaluation.stage`) and the command
line ``python -m evaluation`` (:mod:`evaluation.cli`). Submission and proposal files are read and
validated by their contracts, ``formats.submission`` and ``formats.proposals``.
"""
