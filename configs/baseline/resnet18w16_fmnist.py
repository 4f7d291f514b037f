# Dense baseline: the shared recipe as it is.
_base_ = ['../_base_/fmnist_resnet18w16.py']
