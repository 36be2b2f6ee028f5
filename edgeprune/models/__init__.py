"""Model sources (torchvision names, torch.export archives, ``module:factory``) and the demo net."""
