"""Evaluation: average mAP as the HACS/ActivityNet and EPIC-Kitchens-100 leaderboards compute it
(:mod:`evaluation.detection`), proposal AR@AN and AUC (:mod:`evaluation.proposal`), submission
validation (:mod:`evaluation.submission`), reports (:mod:`evaluation.report`), the pipeline's eval
stage (:mod:`evaluation.stage`) and the command line ``python -m evaluation`` (:mod:`evaluation.cli`).
"""
