"""One router per resource of the MNIST MLP API."""
