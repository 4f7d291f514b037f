# Retrieval of classes never trained on (Fashion-MNIST).
#
# Train a 5-way classifier on classes 0-4 (T-shirt, trouser, pullover,
# dress, coat) of the training split, then retrieve among the 5,000 test
# images of classes 5-9 (sandal, shirt, sneaker, bag, ankle boot): each
# queries the other 4,999, relevant = same class. `ENNClassSubset` keeps
# the samples of the listed classes with their original labels.
_base_ = ['./resnet18w16_fmnist_retrieval.py']

seen_classes = [0, 1, 2, 3, 4]
unseen_classes = [5, 6, 7, 8, 9]

model = dict(head=dict(num_classes=len(seen_classes)))
data_preprocessor = dict(num_classes=len(seen_classes))

train_dataloader = dict(
    dataset=dict(
        _delete_=True,
        type='ENNClassSubset',
        classes=seen_classes,
        dataset=dict(
            type={{_base_.dataset_type}},
            data_root={{_base_.data_root}},
            split='train',
            pipeline={{_base_.train_pipeline}})))
val_dataloader = dict(
    dataset=dict(
        _delete_=True,
        type='ENNClassSubset',
        classes=unseen_classes,
        dataset=dict(
            type={{_base_.dataset_type}},
            data_root={{_base_.data_root}},
            split='test',
            test_mode=True,
            pipeline={{_base_.test_pipeline}})))
test_dataloader = val_dataloader
