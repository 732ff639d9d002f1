"""Seed document 001 implementation example, verbatim except for its import line."""
import torch
from nnh import Sampler

class GaussianNoiseSampler(Sampler):
    """A simple sampler that generates Gaussian noise."""
    
    def __init__(self, mean=0.0, std=1.0, **kwargs):
        super().__init__(**kwargs)
        self.mean = mean
        self.std = std
    
    def sample(self, N, device, shape=(3, 32, 32), **kwargs):
        """
        Generate N samples of Gaussian noise.
        
        Args:
            N (int): Number of samples to generate.
            device (torch.device): Device to generate samples on.
            shape (tuple): Shape of each sample (excluding batch dimension).
            **kwargs: Additional sampling parameters (unused in this implementation).
            
        Returns:
            torch.Tensor: A tensor of shape (N, *shape) containing the generated samples.
        """
        return torch.normal(
            mean=self.mean,
            std=self.std,
            size=(N, *shape),
            device=device
        )
    
    def save(self):
        """
        Serialize the sampler state.
        
        Returns:
            dict: A dictionary containing the serialized state.
        """
        return {
            'mean': self.mean,
            'std': self.std
        }
    
    def load(self, **state_dict):
        """
        Deserialize the sampler state.
        
        Args:
            **state_dict: A dictionary containing the serialized state.
            
        Returns:
            self: The sampler instance.
        """
        self.mean = state_dict.get('mean', 0.0)
        self.std = state_dict.get('std', 1.0)
        return self
