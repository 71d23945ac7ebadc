"""Request and response models of REST ``/v1``, one module per resource."""
