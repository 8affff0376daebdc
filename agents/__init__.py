"""DQN agent (TensorFlow 2.15 / tf.keras) that learns to steer a reconstruction.

Modules, one job each (importing this package imports nothing heavy):
    config      DQNConfig hyperparameters and the linear schedule (no TensorFlow)
    replay      NumPy ring replay buffer (terminated, not done, is stored)
    dqn         Q network, target network, Double-DQN update in one tf.function per round
    train       the loop: act, store, learn, log (TensorBoard), evaluate, checkpoint, resume
    checkpoint  one-file atomic .npz checkpoints (weights, optimizer, replay, RNG, counters)
    evaluate    greedy evaluation episodes with their own seeds
    envs        gym.make plus space checks; registers recon_env/PtychoTuning-v0 on demand
    distributed data-parallel training on Horovod ranks launched through sparkmpi_dl
    compare     agents vs best fixed, ptypy defaults, a hand schedule and per-scan BO,
                scored by the true phase RMS on held-out scans
    bo          the small Gaussian-process Bayesian optimiser of baseline (d)
    steer       NumPy greedy policy steering a Reconstructor (recon --agent)
    plot        learning-curve and comparison PNGs
    cli         `sparkmpi-dl agent train|eval|compare`, `sparkmpi-dl bench agent-cartpole`
"""
