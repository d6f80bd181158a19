"""Small envs that stand in for a user's own, for the tests.

Importing this module registers `IdentityRegistered-v0` and the others at the end, so
`user_envs:IdentityRegistered-v0` is gymnasium's own `module:EnvName` form; `user_envs:Identity`
names the class directly.
"""

import gymnasium as gym
import numpy as np


class Identity(gym.Env):
    """Each step shows a one-hot target; reward 1 for choosing its index. 20 steps an episode."""

    def __init__(self, num_targets: int = 4, episode_length: int = 20):
        self.observation_space = gym.spaces.Box(0.0, 1.0, (num_targets,), np.float32)
        self.action_space = gym.spaces.Discrete(num_targets)
        self.episode_length = episode_length

    def _observe(self):
        self.target = int(self.np_random.integers(self.action_space.n))
        return np.eye(self.action_space.n, dtype=np.float32)[self.target]

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.t = 0
        return self._observe(), {}

    def step(self, action):
        reward = float(action == self.target)
        self.t += 1
        return self._observe(), reward, self.t >= self.episode_length, False, {}


class ImageObservation(Identity):
    """Discrete actions, but an image observation: ppo.py refuses it."""

    def __init__(self):
        super().__init__()
        self.observation_space = gym.spaces.Box(0, 255, (8, 8, 3), np.uint8)


class DictObservation(Identity):
    """Discrete actions, but a Dict observation: ppo.py refuses it."""

    def __init__(self):
        super().__init__()
        self.observation_space = gym.spaces.Dict({"x": gym.spaces.Box(0.0, 1.0, (4,), np.float32)})


class ShiftedActions(Identity):
    """Identity with actions numbered from 1 (Discrete(4, start=1)); it refuses any other action."""

    def __init__(self):
        super().__init__()
        self.action_space = gym.spaces.Discrete(4, start=1)

    def step(self, action):
        if not self.action_space.contains(action):
            raise ValueError(f"action {action} is not in {self.action_space}")
        return super().step(action - 1)


class NaNReward(Identity):
    """Turns its rewards into NaN after a while, as a broken env would: training must stop cleanly."""

    def step(self, action):
        obs, reward, terminated, truncated, info = super().step(action)
        self.steps_taken = getattr(self, "steps_taken", 0) + 1
        return obs, (np.nan if self.steps_taken > 600 else reward), terminated, truncated, info


class Counter(gym.Env):
    """Observes how many steps the episode has run; only a time limit ends it."""

    observation_space = gym.spaces.Box(0.0, np.inf, (1,), np.float32)
    action_space = gym.spaces.Discrete(2)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.t = 0
        return np.array([0.0], np.float32), {}

    def step(self, action):
        self.t += 1
        return np.array([self.t], np.float32), 0.0, False, False, {}


class ContinuousIdentity(gym.Env):
    """Each step shows a target in [-0.5, 0.5]^2; the reward is minus the squared distance of the
    action from it. Actions are bounded to [-1, 1]: a fresh Gaussian policy (σ = 1) often samples
    beyond them. 20 steps an episode."""

    observation_space = gym.spaces.Box(-0.5, 0.5, (2,), np.float32)
    action_space = gym.spaces.Box(-1.0, 1.0, (2,), np.float32)

    def _observe(self):
        self.target = self.np_random.uniform(-0.5, 0.5, 2).astype(np.float32)
        return self.target.copy()

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.t = 0
        self.received = getattr(self, "received", [])  # every action the env was given, for the tests
        return self._observe(), {}

    def step(self, action):
        self.received.append(np.array(action))
        reward = -float(np.sum((np.asarray(action) - self.target) ** 2))
        self.t += 1
        return self._observe(), reward, self.t >= 20, False, {}


class ContinuousNaNReward(ContinuousIdentity):
    """Turns its rewards into NaN after a while: training must stop cleanly."""

    def step(self, action):
        obs, reward, terminated, truncated, info = super().step(action)
        self.steps_taken = getattr(self, "steps_taken", 0) + 1
        return obs, (np.nan if self.steps_taken > 600 else reward), terminated, truncated, info


class ContinuousCounter(Counter):
    """Counter with a Box action space."""

    action_space = gym.spaces.Box(-1.0, 1.0, (1,), np.float32)


class MultiDimensionalAction(ContinuousIdentity):
    """A matrix-shaped Box action: ppo_continuous.py refuses it."""

    action_space = gym.spaces.Box(-1.0, 1.0, (2, 2), np.float32)


class UnboundedActions(ContinuousIdentity):
    """A Box action space without bounds: ddpg.py, which squashes into the bounds, refuses it."""

    action_space = gym.spaces.Box(-np.inf, np.inf, (2,), np.float32)


class TwoStepChain(gym.Env):
    """A two-step MDP small enough to compute the expected return exactly. From state 0, action a
    earns FIRST_REWARDS[a] and leads to state 1 + a; there, action b earns SECOND_REWARDS[1 + a][b]
    and the episode ends. Observations are one-hot states."""

    FIRST_REWARDS = (4.0, 1.0)
    SECOND_REWARDS = {1: (1.0, 3.0), 2: (5.0, 2.0)}
    observation_space = gym.spaces.Box(0.0, 1.0, (3,), np.float32)
    action_space = gym.spaces.Discrete(2)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.state = 0
        return np.eye(3, dtype=np.float32)[0], {}

    def step(self, action):
        if self.state == 0:
            reward, self.state = self.FIRST_REWARDS[int(action)], 1 + int(action)
            return np.eye(3, dtype=np.float32)[self.state], reward, False, False, {}
        return np.eye(3, dtype=np.float32)[0], self.SECOND_REWARDS[self.state][int(action)], True, False, {}


class ShortCorridor(gym.Env):
    """Sutton and Barto's short corridor with switched actions (Example 13.1): states 0, 1, 2 and the
    goal 3, all observed alike (a constant observation); left and right move one state, except in
    state 1, where they are swapped. -1 a step. Every deterministic policy loops until the time limit;
    the best stochastic one goes right with probability 2 - √2 ≈ 0.59, for a return of about -11.7."""

    observation_space = gym.spaces.Box(0.0, 1.0, (1,), np.float32)
    action_space = gym.spaces.Discrete(2)  # 0 left, 1 right

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.state = 0
        return np.ones(1, np.float32), {}

    def step(self, action):
        move = 1 if int(action) == 1 else -1
        self.state = max(0, self.state + (-move if self.state == 1 else move))
        return np.ones(1, np.float32), -1.0, self.state == 3, False, {}


def short_corridor_value(p_right: float) -> float:
    """The expected return from state 0 of the policy going right with probability p (no time limit):
    v0 = -1 + p v1 + (1-p) v0, v1 = -1 + p v0 + (1-p) v2, v2 = -1 + p 0 + (1-p) v1."""
    p = p_right
    matrix = np.array([[p, -p, 0.0], [-p, 1.0, p - 1.0], [0.0, p - 1.0, 1.0]])
    return float(np.linalg.solve(matrix, -np.ones(3))[0])


class NaNAtTermination(Identity):
    """Identity whose final observation, at the termination after 20 steps, is NaN: its value must
    not enter the advantages (a terminated successor has none)."""

    def step(self, action):
        obs, reward, terminated, truncated, info = super().step(action)
        return (np.full_like(obs, np.nan) if terminated else obs), reward, terminated, truncated, info


class DictOfBoxes(gym.Env):
    """A Dict observation of two Boxes, {"target": the one-hot target, "noise": two uniform numbers};
    Discrete(4) actions as Identity, or with continuous=True the Box(2) actions of ContinuousIdentity
    (the target a point). 20 steps an episode."""

    def __init__(self, continuous: bool = False):
        self.continuous = continuous
        size = 2 if continuous else 4
        self.observation_space = gym.spaces.Dict({
            "target": gym.spaces.Box(-1.0, 1.0, (size,), np.float32),
            "noise": gym.spaces.Box(0.0, 1.0, (2,), np.float32)})
        self.action_space = (gym.spaces.Box(-1.0, 1.0, (2,), np.float32) if continuous
                             else gym.spaces.Discrete(4))

    def _observe(self):
        if self.continuous:
            self.target = self.np_random.uniform(-0.5, 0.5, 2).astype(np.float32)
            target = self.target.copy()
        else:
            self.target = int(self.np_random.integers(4))
            target = np.eye(4, dtype=np.float32)[self.target]
        return {"target": target, "noise": self.np_random.uniform(0, 1, 2).astype(np.float32)}

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.t = 0
        return self._observe(), {}

    def step(self, action):
        if self.continuous:
            reward = -float(np.sum((np.asarray(action) - self.target) ** 2))
        else:
            reward = float(action == self.target)
        self.t += 1
        return self._observe(), reward, self.t >= 20, False, {}


class DictWithImage(Identity):
    """A Dict observation holding an image beside a vector: refused, as a plain image is."""

    def __init__(self):
        super().__init__()
        self.observation_space = gym.spaces.Dict({
            "camera": gym.spaces.Box(0, 255, (8, 8, 3), np.uint8),
            "x": gym.spaces.Box(0.0, 1.0, (4,), np.float32)})


class BreaksAfterAWhile(Identity):
    """Raises after a while, as a broken env would: a3c.py's worker that steps it reports why and stops."""

    def step(self, action):
        self.steps_taken = getattr(self, "steps_taken", 0) + 1
        if self.steps_taken > 300:
            raise RuntimeError("the simulator lost its connection")
        return super().step(action)


gym.register(id="IdentityRegistered-v0", entry_point=Identity)
gym.register(id="Counter-v0", entry_point=Counter, max_episode_steps=5)
gym.register(id="ContinuousIdentityRegistered-v0", entry_point=ContinuousIdentity)
gym.register(id="ContinuousCounter-v0", entry_point=ContinuousCounter, max_episode_steps=5)
gym.register(id="CounterForever-v0", entry_point=Counter)  # no time limit: its episodes never end
gym.register(id="ShortCorridor-v0", entry_point=ShortCorridor, max_episode_steps=100)
gym.register(id="DictOfBoxes-v0", entry_point=DictOfBoxes)
gym.register(id="ContinuousDictOfBoxes-v0", entry_point=DictOfBoxes, kwargs={"continuous": True})
# FrozenLake-v1's 4x4 map without the slippery ice: every move goes where it points.
gym.register(id="FrozenLakeNotSlippery-v0", entry_point="gymnasium.envs.toy_text.frozen_lake:FrozenLakeEnv",
             kwargs={"map_name": "4x4", "is_slippery": False}, max_episode_steps=100, reward_threshold=0.9)

