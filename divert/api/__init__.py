"""The portal API and the self-care page (`divert api`)."""
