"""Run state, written once: where a run's files are (`paths`), how they are written (`atomic`), who may
write them (`lock`), whether a stage is done (`stamp`), where training resumes (`epochs`), and the
process set-up of a stage (`runtime`: device, torch.distributed, logging, progress)."""
