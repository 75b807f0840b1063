"""Names of the parts of every MetaMimic observation and reward (no dependencies).

Observations are `{OBSERVATION: raw, GOAL: next demo frames}` (task environments give
only OBSERVATION); rewards are `{IMITATION: r, TASK: r}`.
"""

OBSERVATION = 'observation'  # The raw environment's observation.
GOAL = 'goal'  # The next demonstration frames to imitate.
# Network input (not observed): each goal frame minus the observation.
GOAL_MINUS_OBSERVATION = 'goal_minus_observation'
IMITATION = 'imitation'  # How closely the agent follows the demonstration.
TASK = 'task'  # The domain's sparse task reward.
