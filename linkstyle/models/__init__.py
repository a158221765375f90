"""Generators and classifiers: their interfaces (`generator`, `classifier`), the one seam
every stage loads them through (`registry`), the default architectures and their training
(`stylegen`, `stylegen_training`, `small_resnet`, `classifier_training`), a user's
ResNet-50 (`resnet50`), and the quality checks of stage check_models (`quality`)."""
