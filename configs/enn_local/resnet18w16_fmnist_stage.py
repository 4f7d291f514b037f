# ENN-ℓ with the coarser split: one block per stage (stem + stage 1, stage 2,
# stage 3 + head: 3 blocks) and small conv auxiliary heads (conv-BN-ReLU,
# pooling, linear) that are trained with their block.
_base_ = ['./resnet18w16_fmnist.py']

model = dict(cuts='resnet_stage', local_head=dict(_delete_=True, type='ENNConvAuxLocalHead'))
