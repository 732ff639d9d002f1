"""Seed document 000 usage example, verbatim except for its import lines."""
import torch
import abc
from typing import Dict, Any, Optional
from nnh import NNHandler, Sampler

# --- 1. Define Your Custom Sampler --- 
class MyVAESampler(Sampler):
    def __init__(self, model: torch.nn.Module, temperature: float = 1.0):
        self.model = model # Expects the VAE model (or relevant parts)
        self.temperature = temperature
        # Add any other state needed
        self.internal_state = 0

    def sample(self, N: int, device: Optional[torch.device], **kwargs) -> torch.Tensor:
        # Example: Sampling from a VAE's latent space
        self.model.eval() # Ensure model is in eval mode
        latent_dim = getattr(self.model, 'latent_dim', 64) # Get model's latent dim
        
        with torch.no_grad():
            # Sample random latent vectors (apply temperature if desired)
            z = torch.randn(N, latent_dim, device=device) * self.temperature
            
            # Decode latent vectors using the model's decoder part
            # Assumes model has a 'decode' method or similar structure
            if hasattr(self.model, 'decode'):
                generated_samples = self.model.decode(z)
            else:
                # Adapt if model structure is different
                raise NotImplementedError("Sampler requires model with 'decode' method")
            
            # Update internal state (example)
            self.internal_state += N
            
            return generated_samples

    def save(self) -> Dict[str, Any]:
        # Save relevant internal state
        return {
            'temperature': self.temperature,
            'internal_state': self.internal_state
        }

    def load(self, state_dict: Dict[str, Any]):
        # Load state
        self.temperature = state_dict.get('temperature', 1.0)
        self.internal_state = state_dict.get('internal_state', 0)
        print(f"Loaded sampler state: temp={self.temperature}, internal={self.internal_state}")

# --- 2. Assume you have a trained VAE model and Handler --- 
# Dummy VAE for example
class DummyVAE(torch.nn.Module):
    def __init__(self, latent_dim=64): 
        super().__init__()
        self.latent_dim=latent_dim
        # Dummy decoder part
        self.decoder_fc = torch.nn.Linear(latent_dim, 784)
    def decode(self, z): 
        # Example decoder logic
        img_flat = torch.sigmoid(self.decoder_fc(z))
        return img_flat.view(-1, 1, 28, 28) # Reshape to image
    def forward(self, x): # Dummy forward for training compatibility
        return self.decode(torch.randn(x.shape[0], self.latent_dim, device=x.device))

# Load or create handler with trained model
# handler = NNHandler.load("path/to/your/vae_handler.pth") 
# OR initialize and train:
handler = NNHandler(model_class=DummyVAE, model_kwargs={'latent_dim': 64})
# ... handler.set_optimizer, set_loss_fn, set_train_loader ...
# handler.train(epochs=...) 

# --- 3. Configure the Custom Sampler --- 
handler.set_sampler(
    sampler_class=MyVAESampler,
    # Pass arguments for MyVAESampler.__init__
    model=handler.module, # Pass the unwrapped model
    temperature=0.7 
)

# --- 4. Generate Samples --- 
num_samples_to_generate = 16
if handler._rank == 0: # Typically call on rank 0 in DDP
    generated_samples = handler.get_samples(
        N=num_samples_to_generate,
        device=handler.device 
    )

    if generated_samples is not None:
        print(f"Generated {generated_samples.shape[0]} samples.")
        # Output shape depends on sampler, e.g., torch.Size([16, 1, 28, 28])
