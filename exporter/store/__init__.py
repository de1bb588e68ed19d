"""Redis: the batched state writer and the readers of the window log and history."""
