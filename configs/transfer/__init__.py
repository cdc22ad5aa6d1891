"""Transfer-learning configs: fine-tuning imported weights (finetune.py) and an offline demo (fmnist_split.py)."""
