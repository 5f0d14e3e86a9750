"""Downstream evaluation: does adding synthetic images help a classifier?

classify.py trains, predicts with, saves and loads classifiers; arms.py builds the training set of
each arm (real, classic, synthetic, classic+synthetic); fidelity.py and tsne.py look at synthetic
images through a classifier trained on real ones.
"""
