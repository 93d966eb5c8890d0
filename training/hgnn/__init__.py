"""The heterogeneous GraphSAGE item model (HGNN) of 2T-HGNN: sampling, model, training,
inference. PyTorch + PyTorch Geometric; nothing here is imported by serving."""
