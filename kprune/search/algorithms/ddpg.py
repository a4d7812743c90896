"""A DDPG agent in Keras (Lillicrap et al., ICLR 2016), as AMC uses it.

The agent of AMC (He et al., ECCV 2018; `mit-han-lab/amc: lib/agent.py`):

* actor `mu(s)`: an MLP `state -> hidden1 -> hidden2 -> action`, ReLU, with a
  sigmoid output (actions in [0, 1]);
* critic `Q(s, a)`: `relu(W_s s + W_a a) -> hidden2 -> 1`;
* target networks `mu'`, `Q'`, updated softly after every step,
  `theta' <- (1 - tau) theta' + tau theta`;
* a replay buffer of `(s, a, r, s', done)`; an update samples a batch,
  subtracts a moving average `b` of the batch-mean rewards
  (`b <- b + 0.5 (mean(r) - b)`), and fits the critic to
  `y = (r - b) + gamma (1 - done) Q'(s', mu'(s'))` (mean squared error),
  then moves the actor along `grad_theta mean Q(s, mu_theta(s))`;
* exploration: a truncated normal around `mu(s)` on [0, 1], whose sigma
  decays per episode, `sigma_e = init_delta * delta_decay^(e - warmup)`.

Both steps are compiled Keras training steps (`train_on_batch`, Adam): the
critic's on the squared error, the actor's on `-Q(s, mu(s))` through a frozen
copy of the critic; the networks' initializers and every
random draw are seeded, so an agent is deterministic under a seed. `state()`
and `set_state()` give and take every array (networks, targets, optimizer
slots, buffer) for resumable searches.

Example (the best action of a one-step problem with reward `-(a - 0.3)^2`):

>>> import numpy as np
>>> agent = DDPG(state_dim=1, hidden=(16, 16), batch_size=16, lr_actor=1e-2, lr_critic=1e-2,
...              discount=0.0, seed=0)
>>> rng = np.random.default_rng(0)
>>> for _ in range(150):
...     a = rng.uniform(size=1)
...     agent.observe([0.0], a, -float((a[0] - 0.3) ** 2), [0.0], True)
...     _ = agent.update()
>>> round(abs(float(agent.act([0.0])[0]) - 0.3), 1) <= 0.1
True
"""

import keras
import numpy as np


def truncated_normal(mean, sigma, rng, low=0.0, high=1.0):
    """A draw from N(mean, sigma) truncated to [low, high] (per entry), by
    `scipy.stats.truncnorm` with the NumPy generator `rng`."""
    import scipy.stats  # imported when used: `import kprune` stays light
    mean = np.asarray(mean, dtype=np.float64)
    a, b = (low - mean) / sigma, (high - mean) / sigma
    draws = scipy.stats.truncnorm.rvs(a, b, loc=mean, scale=sigma, size=mean.shape, random_state=rng)
    return np.clip(draws, low, high)


class ReplayBuffer:
    """A ring buffer of transitions `(s, a, r, s', done)` with seeded sampling."""

    def __init__(self, capacity, state_dim, action_dim):
        self.capacity, self.size, self.position = int(capacity), 0, 0
        self.states = np.zeros((self.capacity, state_dim), np.float32)
        self.actions = np.zeros((self.capacity, action_dim), np.float32)
        self.rewards = np.zeros((self.capacity, 1), np.float32)
        self.next_states = np.zeros((self.capacity, state_dim), np.float32)
        self.dones = np.zeros((self.capacity, 1), np.float32)

    def add(self, state, action, reward, next_state, done):
        i = self.position
        self.states[i], self.actions[i], self.rewards[i] = state, action, reward
        self.next_states[i], self.dones[i] = next_state, float(done)
        self.position = (i + 1) % self.capacity
        self.size = min(self.size + 1, self.capacity)

    def sample(self, batch_size, rng):
        index = rng.integers(0, self.size, size=batch_size)
        return (self.states[index], self.actions[index], self.rewards[index].copy(), self.next_states[index],
                self.dones[index])

    def arrays(self):
        return [self.states, self.actions, self.rewards, self.next_states, self.dones]


def mlp_actor(state_dim, action_dim, hidden, seed):
    init = [keras.initializers.GlorotUniform(seed=seed + i) for i in range(3)]
    s = keras.Input((state_dim,))
    h = keras.layers.Dense(hidden[0], activation="relu", kernel_initializer=init[0])(s)
    h = keras.layers.Dense(hidden[1], activation="relu", kernel_initializer=init[1])(h)
    return keras.Model(s, keras.layers.Dense(action_dim, activation="sigmoid", kernel_initializer=init[2])(h))


def mlp_critic(state_dim, action_dim, hidden, seed):
    init = [keras.initializers.GlorotUniform(seed=seed + 10 + i) for i in range(4)]
    s, a = keras.Input((state_dim,)), keras.Input((action_dim,))
    h = keras.layers.Add()([keras.layers.Dense(hidden[0], kernel_initializer=init[0])(s),
                            keras.layers.Dense(hidden[0], use_bias=False, kernel_initializer=init[1])(a)])
    h = keras.layers.Dense(hidden[1], activation="relu", kernel_initializer=init[2])(keras.layers.ReLU()(h))
    return keras.Model([s, a], keras.layers.Dense(1, kernel_initializer=init[3])(h))


def negative_value(y_true, y_pred):
    """The actor's loss: `-Q(s, mu(s))` (the target is unused)."""
    return -keras.ops.mean(y_pred)


class DDPG:
    """Deep deterministic policy gradient with AMC's settings.

    Args:
        state_dim: the length of a state vector.
        action_dim: the length of an action vector. Defaults to 1.
        hidden: the two hidden widths. Defaults to (300, 300) (AMC).
        lr_actor / lr_critic: Adam learning rates. Defaults to 1e-4 / 1e-3.
        tau: the soft-update rate of the target networks. Defaults to 0.01.
        discount: gamma. Defaults to 1.0 (AMC: every transition of an
            episode gets the episode's reward).
        batch_size: transitions per update. Defaults to 64.
        buffer_size: the replay buffer's capacity. Defaults to 2000.
        init_delta / delta_decay: the exploration sigma
            `init_delta * delta_decay^(episode - warmup)`. Defaults to 0.5 / 0.95.
        warmup: episodes of uniform random actions. Defaults to 100.
        seed: seeds the initializers, the sampling and the noise. Defaults to 0.
    """

    def __init__(self, state_dim, action_dim=1, hidden=(300, 300), lr_actor=1e-4, lr_critic=1e-3, tau=0.01,
                 discount=1.0, batch_size=64, buffer_size=2000, init_delta=0.5, delta_decay=0.95, warmup=100,
                 seed=0):
        for name, value in (("state_dim", state_dim), ("action_dim", action_dim), ("batch_size", batch_size),
                            ("buffer_size", buffer_size)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"Argument `{name}` must be an int >= 1. Received: {name}={value!r}")
        if not 0 < tau <= 1:
            raise ValueError(f"Argument `tau` must be in (0, 1]. Received: tau={tau!r}")
        if not 0 <= discount <= 1:
            raise ValueError(f"Argument `discount` must be in [0, 1]. Received: discount={discount!r}")
        if isinstance(warmup, bool) or not isinstance(warmup, int) or warmup < 0:
            raise ValueError(f"Argument `warmup` must be an int >= 0. Received: warmup={warmup!r}")
        self.tau, self.discount, self.batch_size = float(tau), float(discount), batch_size
        self.init_delta, self.delta_decay, self.warmup = float(init_delta), float(delta_decay), warmup
        self.actor = mlp_actor(state_dim, action_dim, hidden, seed)
        self.critic = mlp_critic(state_dim, action_dim, hidden, seed)
        self.actor_target = mlp_actor(state_dim, action_dim, hidden, seed)
        self.critic_target = mlp_critic(state_dim, action_dim, hidden, seed)
        self.actor_target.set_weights(self.actor.get_weights())
        self.critic_target.set_weights(self.critic.get_weights())
        # The actor's objective reads a frozen copy of the critic (weights copied
        # before each step), so both steps compile as ordinary Keras training steps.
        self.critic_view = mlp_critic(state_dim, action_dim, hidden, seed)
        self.critic_view.trainable = False
        s = keras.Input((state_dim,))
        self.actor_value = keras.Model(s, self.critic_view([s, self.actor(s)]))
        self.critic.compile(optimizer=keras.optimizers.Adam(lr_critic), loss="mse")
        self.actor_value.compile(optimizer=keras.optimizers.Adam(lr_actor), loss=negative_value)
        self.critic.optimizer.build(self.critic.trainable_variables)
        self.actor_value.optimizer.build(self.actor_value.trainable_variables)
        self.buffer = ReplayBuffer(buffer_size, state_dim, action_dim)
        self.rng = np.random.default_rng(seed)
        self.moving_average = None
        self.action_dim = action_dim

    # -------------------------------------------------------------- acting
    def act(self, state):
        """`mu(state)` (no noise)."""
        state = np.asarray(state, np.float32).reshape(1, -1)
        return keras.ops.convert_to_numpy(self.actor(state, training=False))[0].astype(np.float64)

    def explore(self, state, episode):
        """A uniform random action during warm-up (`episode < warmup`), else a
        truncated normal around `mu(state)` with the episode's sigma."""
        if episode < self.warmup:
            return self.rng.uniform(0.0, 1.0, size=self.action_dim)
        sigma = self.init_delta * self.delta_decay ** (episode - self.warmup)
        return np.atleast_1d(truncated_normal(self.act(state), max(sigma, 1e-6), self.rng))

    def observe(self, state, action, reward, next_state, done):
        """Store one transition."""
        self.buffer.add(state, action, reward, next_state, done)

    # ------------------------------------------------------------ learning
    def update(self):
        """One DDPG step on a sampled batch (nothing until the buffer holds a
        batch). Returns the critic's loss, or None."""
        if self.buffer.size < self.batch_size:
            return None
        s, a, r, s2, done = self.buffer.sample(self.batch_size, self.rng)
        mean = float(np.mean(r))
        self.moving_average = mean if self.moving_average is None else (
            self.moving_average + 0.5 * (mean - self.moving_average))
        r = r - self.moving_average
        next_q = keras.ops.convert_to_numpy(self.critic_target([keras.ops.convert_to_tensor(s2),
                                                                self.actor_target(keras.ops.convert_to_tensor(s2))]))
        y = (r + self.discount * (1.0 - done) * next_q).astype(np.float32)
        loss = self.critic.train_on_batch([s, a], y)
        self.critic_view.set_weights(self.critic.get_weights())
        self.actor_value.train_on_batch(s, np.zeros((len(s), 1), np.float32))
        self.soft_update()
        return float(loss)

    def soft_update(self):
        """`theta' <- (1 - tau) theta' + tau theta` for both target networks."""
        for target, source in ((self.actor_target, self.actor), (self.critic_target, self.critic)):
            target.set_weights([(1.0 - self.tau) * t + self.tau * v
                                for t, v in zip(target.get_weights(), source.get_weights())])

    # -------------------------------------------------------------- state
    def state(self):
        """`(arrays, data)`: every array of the agent (a list) and its scalars
        and generator state (JSON-ready)."""
        arrays = [keras.ops.convert_to_numpy(v.value) for v in self.variables()] + self.buffer.arrays()
        data = {"moving_average": self.moving_average, "rng": self.rng.bit_generator.state,
                "buffer": [self.buffer.size, self.buffer.position]}
        return arrays, data

    def set_state(self, arrays, data):
        """Restore what `state()` gave."""
        variables = self.variables()
        if len(arrays) != len(variables) + 5:
            raise ValueError(f"Expected {len(variables) + 5} arrays for this agent. Received: {len(arrays)}")
        for variable, value in zip(variables, arrays):
            variable.assign(value)
        buffer = arrays[len(variables):]
        for target, value in zip(self.buffer.arrays(), buffer):
            target[...] = value
        self.buffer.size, self.buffer.position = data["buffer"]
        self.moving_average = data["moving_average"]
        self.rng.bit_generator.state = data["rng"]

    def variables(self):
        return (list(self.actor.weights) + list(self.critic.weights) + list(self.actor_target.weights)
                + list(self.critic_target.weights) + list(self.actor_value.optimizer.variables)
                + list(self.critic.optimizer.variables))
